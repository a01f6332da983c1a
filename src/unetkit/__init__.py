"""unetkit: train, evaluate and apply U-Nets to your own images.

The Python API mirrors the command line::

    from unetkit import load_config, train, evaluate, predict
    cfg = load_config("configs/isbi2012.yaml", ["train.epochs=5"])
    run = train(cfg)
    evaluate(run.run_dir / "best.pt", "data/test")
    predict(run.run_dir / "best.pt", ["new_images/"], "masks_out")
"""

from unetkit.config import Config, load_config
from unetkit.demo import run_demo
from unetkit.errors import UnetkitError
from unetkit.infer.evaluate import evaluate
from unetkit.infer.predict import predict
from unetkit.models.unet import UNet
from unetkit.train.run import train

__all__ = ["Config", "UNet", "UnetkitError", "evaluate", "load_config", "predict", "run_demo", "train"]
__version__ = "0.1.0"
