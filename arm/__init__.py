"""The arm interface (`base`) and the franky (libfranka) driver; the MuJoCo arm lives in `sim`."""
