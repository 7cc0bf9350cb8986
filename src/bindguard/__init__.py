"""bindguard: find and repair the adversarial weak spots of unified multimodal encoders."""

__version__ = "0.1.0"
