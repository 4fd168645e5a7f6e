"""Which known defects the regions of a map found, and which regions are false: the count a person checks by eye.

A defect is a connected component of its mask; a region is a connected component of `map > threshold` of
at least `min_area` pixels, as scoring draws it (nsgan/score/regions.py, 8-connectivity). A defect is found
when a region touches it (shares a pixel or is its 8-neighbour); a region touching no defect is a false one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from nsgan.score.regions import EIGHT, drawn_labels


@dataclass(frozen=True)
class DefectMatch:
    """Known defects found and missed by the regions of one map, and the regions that touch no defect."""

    defects: int
    found: int
    regions: int
    false_regions: int

    @property
    def missed(self) -> int:
        return self.defects - self.found

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "missed": self.missed}

    def sentence(self) -> str:
        """E.g. 'found 3 of 3 painted defects; 1 false region' (the misses said when there are any)."""
        missed = f" ({self.missed} missed)" if self.missed else ""
        plural = "" if self.false_regions == 1 else "s"
        return f"found {self.found} of {self.defects} painted defects{missed}; {self.false_regions} false region{plural}"


def match_defects(amap: np.ndarray, threshold: float, min_area: int, mask: np.ndarray) -> DefectMatch:
    """Count found and missed defects (components of `mask`) and false regions of `amap > threshold`."""
    if amap.shape != mask.shape:
        raise ValueError(f"map {amap.shape} and mask {mask.shape} differ in shape")
    region_lab, kept = drawn_labels(amap, threshold, min_area)
    drawn = np.isin(region_lab, kept)
    defect_lab, n_defects = ndimage.label(mask, structure=EIGHT)
    near_drawn = ndimage.binary_dilation(drawn, structure=EIGHT)  # a defect's pixel in or beside a region touches it
    found = len(np.unique(defect_lab[near_drawn & (defect_lab > 0)]))
    near_defect = ndimage.binary_dilation(mask, structure=EIGHT)
    true_regions = set(np.unique(region_lab[near_defect & drawn]).tolist())
    return DefectMatch(defects=n_defects, found=found, regions=len(kept), false_regions=len(kept) - len(true_regions))
