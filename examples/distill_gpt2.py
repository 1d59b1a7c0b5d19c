"""Fine-tune a pruned causal LM (GPT-2 family) with soft distillation from its unpruned teacher (UP-ViTs, Eq. 2).

    python examples/distill_gpt2.py --student ./up-gpt2 --teacher openai-community/gpt2 \\
        --dataset Salesforce/wikitext --dataset_config wikitext-103-raw-v1 --output_dir up-gpt2-ft \\
        --block_size 512 --per_device_train_batch_size 8 --num_train_epochs 1 --bf16
    accelerate launch --num_processes 8 examples/distill_gpt2.py ...   # same arguments

The recipe (text grouped into fixed-length blocks, KL per predicted token) lives in
`upvit_hf.recipes.lm_distillation`; `upvit distill` runs the same code.
"""

from upvit_hf.recipes.lm_distillation import main

if __name__ == "__main__":
    main()
