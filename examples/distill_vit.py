"""Fine-tune a pruned ViT / DeiT student with soft distillation from its unpruned teacher (UP-ViTs, Eq. 2).

    python examples/distill_vit.py --student ./up-deit-s --teacher facebook/deit-base-distilled-patch16-224 \\
        --dataset ILSVRC/imagenet-1k --output_dir up-deit-s-ft --per_device_train_batch_size 256 \\
        --num_train_epochs 100 --warmup_steps 0.02 --bf16 --ema_decay 0.99996
    accelerate launch --num_processes 8 examples/distill_vit.py ...   # same arguments

The recipe (the authors' ImageNet one: AdamW, cosine schedule with warm-up, RandomResizedCrop + flip +
CutMix, optional EMA) lives in `upvit_hf.recipes.image_distillation`; `upvit distill` runs the same code.
"""

from upvit_hf.recipes.image_distillation import main

if __name__ == "__main__":
    main()
