"""One Accelerate training loop for every method."""

from .arguments import TrainingArguments
from .interrupt import TrainingInterrupted
from .loop import NonFiniteLossError, pretrain
