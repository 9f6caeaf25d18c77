"""ssl_hf: self-supervised vision pre-training methods as Hugging Face models.

`import ssl_hf` registers every method's config with `AutoConfig` and its `<M>ForPreTraining` with
`AutoModelForPreTraining`. The public names are those of `ssl_hf.api` (`ssl_hf.MAEConfig`, `ssl_hf.METHODS`, ...);
`ssl_hf.startup` says when they load (the `ssl-hf` console script defers them so that `--help` is fast).
"""

__version__ = "0.1.0"

from .startup import public_attribute as __getattr__  # after __version__: the console script reads only that
from .startup import public_names as __dir__
