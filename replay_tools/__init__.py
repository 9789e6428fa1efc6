"""Offline tools over a replay store (`replay` CLI). They combine floors (store, policies, the learner's
classifiers), so they live at the top beside the daemon."""
