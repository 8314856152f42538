"""DPF at paper scale (for GPU/TPU users; Lin et al. 2020, Appendix A.2):

- ResNet-20/32/56 on CIFAR-10: 300 epochs, lr 0.2, wd 1e-4, lr / 10 at 50%, 75%;
- WideResNet-28-{2,4,8} on CIFAR-10: 200 epochs, lr 0.1, wd 5e-4, lr / 5 at 30%, 60%, 80%;
- VGG16-D on CIFAR-10: 300 epochs, lr 0.2, wd 1e-4, lr / 10 at 50%, 75%;
- ResNet-50 on ImageNet: 90 epochs, batch 1024, warm-up 0.1 -> 0.4 over 5 epochs,
  lr / 10 at epochs 30, 60, 80, wd 1e-4 (``jaxprune/configs/dpf_imagenet_resnet50.py``).

Data is streamed (grain): CIFAR-10 from a prepared tensorflow-datasets copy or
an image folder, never held in memory whole.
CIFAR batch 128; SGD + Nesterov 0.9 everywhere; all 50,000 CIFAR training
images (the paper holds out no validation split); 60 fine-tuning epochs for
One-shot P+FT and the "+FT" rows (Table 2). Argument ``model,method,target``
(methods: ``jaxprune/configs/dpf_base.py`` METHODS):

    python -m experiments.run --config jaxprune/configs/dpf_paper.py:wrn28_2,dpf,0.95 --workdir runs/x

Targets of the paper: Table 1/2 (CIFAR-10) 0.7, 0.8, 0.9, 0.95, 0.99 depending on
the model (e.g. ResNet-20 at 0.9: DPF 90.88 vs dense 92.48); Table 3 (ImageNet)
0.8 and 0.9. The schedule ends at the second lr decay (epoch 225 for ResNets,
120 for WideResNets, 60 for ResNet-50).
"""

from jaxprune.configs.dpf_base import study_config
from jaxprune.configs.dpf_imagenet_resnet50 import imagenet_recipe

_CIFAR = {
    # model: (epochs, lr, weight decay, milestones, decay factor)
    "resnet20": (300, 0.2, 1e-4, (0.5, 0.75), 0.1),
    "resnet32": (300, 0.2, 1e-4, (0.5, 0.75), 0.1),
    "resnet56": (300, 0.2, 1e-4, (0.5, 0.75), 0.1),
    "wrn28_2": (200, 0.1, 5e-4, (0.3, 0.6, 0.8), 0.2),
    "wrn28_4": (200, 0.1, 5e-4, (0.3, 0.6, 0.8), 0.2),
    "wrn28_8": (200, 0.1, 5e-4, (0.3, 0.6, 0.8), 0.2),
    "vgg16": (300, 0.2, 1e-4, (0.5, 0.75), 0.1),
}
MODELS = (*_CIFAR, "resnet50")


def get_config(arg: str | None = "resnet20,dpf,0.9"):
    parts = [p.strip() for p in (arg or "resnet20,dpf,0.9").split(",")]
    if len(parts) != 3 or parts[0] not in MODELS:
        raise ValueError(f"argument {arg!r} must be 'model,method,target' with model in {list(MODELS)}")
    model, method, target = parts[0], parts[1], float(parts[2])
    config = study_config(method, target)
    config.model.name = model
    t = config.train
    t.log_every = 100
    t.checkpoint_every = 1000
    if model in _CIFAR:
        epochs, lr, wd, milestones, factor = _CIFAR[model]
        config.data.name = "cifar10"
        t.epochs, t.lr, t.weight_decay, t.milestones, t.lr_decay_factor = epochs, lr, wd, milestones, factor
        t.batch_size = 128
        config.data.streaming = True  # tfds' ArrayRecord copy (or an image folder), read lazily
        config.data.val_fraction = 0.0  # train on all 50k; the paper has no validation split
    else:
        imagenet_recipe(config)  # jaxprune/configs/dpf_imagenet_resnet50.py
    return config
