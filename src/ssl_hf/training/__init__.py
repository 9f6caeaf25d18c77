"""One Accelerate training loop for every method."""

from .arguments import TrainingArguments
from .loop import NonFiniteLossError, pretrain
