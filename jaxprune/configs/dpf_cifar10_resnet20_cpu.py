"""DPF study, small conv run: ResNet-20 on the CIFAR-10 JPEG copy (10k training
images), 20 epochs, the paper's ResNet recipe otherwise (lr 0.2 / 10 at 50% and
75%, wd 1e-4, batch 128, Nesterov 0.9), target 0.90. Fine-tuning: 4 epochs (the
paper's 60 per 300 training epochs, scaled).

    python -m experiments.run --config jaxprune/configs/dpf_cifar10_resnet20_cpu.py:dpf,0.9 --workdir runs/x
"""

from jaxprune.configs.dpf_base import parse_arg, study_config


def get_config(arg: str | None = None):
    method, target = parse_arg(arg, "dpf", 0.9)
    config = study_config(method, target, finetune_epochs=4)
    config.data.name = "cifar10"
    config.model.name = "resnet20"
    t = config.train
    t.epochs = 20
    t.lr = 0.2
    t.weight_decay = 1e-4
    t.eval_batch_size = 1000
    t.log_every = 20
    t.keep_checkpoints = 1
    return config
