"""A tiny ranked test split for ranking and explorer tests: 3 queries and 4 gallery images, each image a
different grey, with known distances."""

from __future__ import annotations

import numpy as np
from PIL import Image

from reidlib.rankings import RankedTest

DIST = np.array([[0.4, 0.3, 0.1, 0.2],
                 [0.1, 0.2, 0.3, 0.4],
                 [0.3, 0.1, 0.2, 0.4]])


def grey_ranked_test(folder, g_camids=(1, 1, 1, 1)) -> RankedTest:
    """Queries pids 1, 2, 2 (cameras 0, 0, 1), gallery pids 2, 1, 1, 3 on `g_camids`; images 16 x 8 in
    `folder`. Query 0 is nearest to gallery 2 (pid 1)."""
    paths = []
    for i in range(7):
        path = folder / f"{i}.png"
        Image.fromarray(np.full((16, 8, 3), 30 * i, np.uint8)).save(path)
        paths.append(str(path))
    return RankedTest(paths[:3], paths[3:], DIST, q_pids=np.array([1, 2, 2]), g_pids=np.array([2, 1, 1, 3]),
                      q_camids=np.array([0, 0, 1]), g_camids=np.array(g_camids), size=(8, 16))
