"""Pre-train any ssl_hf method; the same code path as `ssl-hf pretrain`.

    accelerate launch examples/pretrain.py --method mae --dataset digit-scenes --backbone vit-tiny \
        --image_size 32 --patch_size 4 --batch_size 64 --max_steps 1000 --output_dir runs/mae
"""

import sys

from ssl_hf.cli import main


if __name__ == "__main__":
    main(["pretrain", *sys.argv[1:]])
