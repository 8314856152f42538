"""Paper-scale AP2/AP3 study (Mozafarinia & Yasaei Sekeh, section 5): an
ImageNet-pretrained model trained 100 epochs on CIFAR-10/100 (SGD, momentum
0.9; lr 0.1 for ResNet50, 0.01 for VGG16), then last-layer pruning and 20
fine-tuning epochs; 3 methods x 4 sparsities x 3 trials, 600k Student-t draws.

    python -m experiments.run --config jaxprune/configs/ap_paper.py:resnet50,cifar10 \\
        --workdir runs/ap_paper/r50_c10 \\
        --config.method.pretrained_checkpoint=/path/to/resnet50_imagenet.npz

Pretrained weights are NOT downloaded: supply them as an ``.npz`` in the
``jaxprune.pipelines.ap_study.save_variables`` format (keys
``params/<path>`` and ``batch_stats/<path>`` of this library's model, e.g.
converted from torchvision). The 1000-class ImageNet head does not fit a
10/100-class task: ``skip_mismatch=True`` keeps a fresh head there. Models
the zoo lacks (AlexNet, ViT) and Tiny-ImageNet (not a dataset here) are not
offered. CIFAR-100 loads through tensorflow-datasets (needs network once).
"""

from __future__ import annotations

from jaxprune.configs.ap_base import ap_config

LR = {"resnet50": 0.1, "vgg16": 0.01}
DATASETS = ("cifar10", "cifar100")


def get_config(arg: str = "resnet50,cifar10"):
    parts = [s.strip() for s in arg.split(",")]
    if len(parts) != 2 or parts[0] not in LR or parts[1] not in DATASETS:
        raise ValueError(f"config argument {arg!r} must be 'model,dataset' with model in {sorted(LR)} "
                         f"and dataset in {list(DATASETS)}")  # fmt: skip
    model, dataset = parts
    c = ap_config(dataset=dataset, model=model, lr=LR[model], epochs=100)
    c.method.train_from_checkpoint = True
    c.method.skip_mismatch = True
    return c
