"""The ChArUco calibration board: its description, its printable image, and its detection.

ChArUco (a chessboard with ArUco markers in the white squares) is detected even when partly hidden
or seen at an angle, and every corner is identified, so one view gives a full 6-DoF board pose.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from calibration.intrinsics import Intrinsics


@dataclass(frozen=True)
class BoardSpec:
    """A ChArUco board: squares across and down, square and marker side (m), ArUco dictionary."""

    squares_x: int = 6
    squares_y: int = 5
    square_m: float = 0.04
    marker_m: float = 0.03
    dictionary: str = "DICT_4X4_50"

    def __post_init__(self) -> None:
        if self.squares_x < 3 or self.squares_y < 3:
            raise ValueError(f"board squares must be at least 3x3, got {self.squares_x}x{self.squares_y}")
        if not self.square_m > 0:
            raise ValueError(f"board square size must be > 0 m, got {self.square_m}")
        if not 0 < self.marker_m < self.square_m:
            raise ValueError(f"board marker size {self.marker_m} m must be > 0 and below the square size {self.square_m} m")
        if not self.dictionary.startswith("DICT_") or not hasattr(cv2.aruco, self.dictionary):
            raise ValueError(f"unknown ArUco dictionary {self.dictionary!r} (e.g. DICT_4X4_50, DICT_5X5_100)")
        markers = (self.squares_x * self.squares_y) // 2
        if markers > _dictionary_size(self.dictionary):
            raise ValueError(f"{self.dictionary} has too few markers for a {self.squares_x}x{self.squares_y} board")

    @property
    def width_m(self) -> float:
        return self.squares_x * self.square_m

    @property
    def height_m(self) -> float:
        return self.squares_y * self.square_m

    def board(self) -> cv2.aruco.CharucoBoard:
        d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_m, self.marker_m, d)

    def image(self, px_per_square: int = 100, margin_squares: float = 0.5) -> np.ndarray:
        """The board as a grey image with a white margin (`margin_squares` wide on each side)."""
        margin = round(px_per_square * margin_squares)
        size = (self.squares_x * px_per_square + 2 * margin, self.squares_y * px_per_square + 2 * margin)
        return self.board().generateImage(size, marginSize=margin, borderBits=1)

    def as_dict(self) -> dict:
        return asdict(self)


def _dictionary_size(name: str) -> int:
    return int(name.rsplit("_", 1)[-1])


@dataclass(frozen=True)
class Detection:
    """One view of the board: its pose in the camera frame (OpenCV axes) and the corners it used."""

    target2cam: np.ndarray  # 4x4: board frame -> camera frame
    corner_ids: np.ndarray  # (N,) ChArUco corner ids
    object_points: np.ndarray  # (N, 3) corners in the board frame, m
    image_points: np.ndarray  # (N, 2) corners in the image, px
    reprojection_px: float  # RMS reprojection error of the pose

    @property
    def corners(self) -> int:
        return len(self.corner_ids)


def detect_board(
    image: np.ndarray, spec: BoardSpec, intrinsics: Intrinsics, min_corners: int = 6
) -> Detection | None:
    """Find the board in an RGB (or grey) image and estimate its pose; None if too few corners."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if grey.shape[1] != intrinsics.width or grey.shape[0] != intrinsics.height:
        raise ValueError(
            f"image is {grey.shape[1]}x{grey.shape[0]} but the intrinsics are for "
            f"{intrinsics.width}x{intrinsics.height}"
        )
    board = spec.board()
    corners, ids, _marker_corners, _marker_ids = cv2.aruco.CharucoDetector(board).detectBoard(grey)
    if ids is None or len(ids) < max(min_corners, 4):
        return None
    obj, img = board.matchImagePoints(corners, ids)
    obj = obj.reshape(-1, 3).astype(np.float64)
    img = img.reshape(-1, 2).astype(np.float64)
    # Collinear corners (one row of the board) give no unique pose.
    if board.checkCharucoCornersCollinear(ids):
        return None
    K, dist = intrinsics.matrix, intrinsics.dist
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, dist, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        return None
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, K, dist, rvec, tvec)
    proj, _ = cv2.projectPoints(obj, rvec, tvec, K, dist)
    rms = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - img) ** 2, axis=1))))
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(rvec)[0]
    T[:3, 3] = tvec.ravel()
    return Detection(
        target2cam=T, corner_ids=ids.ravel().copy(), object_points=obj, image_points=img, reprojection_px=rms
    )
