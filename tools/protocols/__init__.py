"""Seeded builders of the evaluation protocols, each writing one MVTec-style category folder.

Layout (every builder)::

    OUT/train/good/*.png                         normal training images (a fraction ε secretly defective)
    OUT/train/defect/*.png                       labelled abnormal training images
    OUT/ground_truth_train/defect/<name>_mask.png   their masks, where the protocol has masks
    OUT/test/good/*.png
    OUT/test/<defect type>/*.png
    OUT/ground_truth/<defect type>/<name>_mask.png  test masks, where the protocol has masks
    OUT/protocol.json                            parameters, counts, which training images are contaminated

Run `python -m tools.protocols {mnist,ir_mnist,textures,visible,caltech} --out DIR [options]`.
"""

BUILDERS = ("mnist", "ir_mnist", "textures", "visible", "caltech")
