"""Training engine: `train(cfg)` runs (or reuses, or resumes) one cached run; `extract` and
`evaluate_model` score a model with its own matching rule.

    from reidlib.engine import train
    run = train(RunConfig.from_profile("bot", "demo"))
    run.metrics["mAP"], run.history_frame("epoch"), run.load_model()
"""

from reidlib.engine.inference import evaluate_model, extract, extract_test
from reidlib.engine.loop import Run, train
from reidlib.engine.optim import LRFactor, build_optimizer, build_scheduler
from reidlib.engine.step import NonFiniteLossError, StepContext, default_train_step

__all__ = ["train", "Run", "extract", "extract_test", "evaluate_model", "NonFiniteLossError", "StepContext",
           "default_train_step", "build_optimizer", "build_scheduler", "LRFactor"]
