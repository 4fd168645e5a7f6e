"""Found and missed defects and false regions on a planted map, as the demo's last line counts them."""

from __future__ import annotations

import numpy as np

from nsgan.evaluate.defect_match import match_defects


def _planted():
    mask = np.zeros((40, 40), bool)
    mask[5:8, 5:8] = True  # defect A: a region covers it
    mask[20:22, 30:34] = True  # defect B: a region lies beside it (touching, one pixel away)
    mask[33:36, 3:6] = True  # defect C: missed
    amap = np.zeros((40, 40), np.float32)
    amap[4:9, 4:9] = 0.9  # on A
    amap[22:24, 30:33] = 0.8  # next row below B: touches it
    amap[12:15, 20:23] = 0.7  # false region
    amap[30, 30] = 0.95  # above threshold but 1 px: not a region at min_area 4
    return amap, mask


def test_found_missed_and_false_regions_on_a_planted_map():
    amap, mask = _planted()
    m = match_defects(amap, 0.5, 4, mask)
    assert (m.defects, m.found, m.missed, m.regions, m.false_regions) == (3, 2, 1, 3, 1)
    assert m.sentence() == "found 2 of 3 painted defects (1 missed); 1 false region"
    assert m.to_dict() == {"defects": 3, "found": 2, "regions": 3, "false_regions": 1, "missed": 1}


def test_a_higher_threshold_drops_regions_and_finds_less():
    amap, mask = _planted()
    m = match_defects(amap, 0.75, 4, mask)
    assert (m.found, m.regions, m.false_regions) == (2, 2, 0)
    assert m.sentence() == "found 2 of 3 painted defects (1 missed); 0 false regions"
    m = match_defects(amap, 0.99, 4, mask)
    assert (m.found, m.regions, m.false_regions) == (0, 0, 0)
