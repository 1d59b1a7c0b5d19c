"""Fine-tune a pruned causal LM (GPT-2 family) with soft distillation from its unpruned teacher (UP-ViTs, Eq. 2).

Text is tokenized and grouped into fixed-length blocks (the classic `group_texts`); the KL term is taken per
predicted token, over the same tokens as the cross-entropy. For example:

    python examples/distill_gpt2.py --student ./up-gpt2 --teacher openai-community/gpt2 \\
        --dataset Salesforce/wikitext --dataset_config wikitext-103-raw-v1 --output_dir up-gpt2-ft \\
        --block_size 512 --per_device_train_batch_size 8 --num_train_epochs 1 --bf16
    accelerate launch --num_processes 8 examples/distill_gpt2.py ...   # same arguments

`--dataset` is a `datasets` name, a `save_to_disk` folder or a folder of text files (train.txt,
validation.txt); `--student`/`--teacher`/`--tokenizer` are hub ids or local folders. Eval reports
`eval_ce` (so perplexity = exp(eval_ce)) and `eval_kl`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import chain

from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    HfArgumentParser,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

from ..adapters import adapter_class_for_config
from ..distillation import DistillationTrainer
from ..evaluation.data import check_columns, load_source
from .common import DistillationDataArguments, DistillationModelArguments, load_student_and_teacher, train_eval_splits


@dataclass
class ModelArguments(DistillationModelArguments):
    tokenizer: str | None = field(default=None, metadata={"help": "Default: the teacher's tokenizer."})


@dataclass
class DataArguments(DistillationDataArguments):
    eval_fraction: float = field(default=0.05, metadata={"help": "Held-out fraction when there is no eval split."})
    text_column: str = "text"
    block_size: int | None = field(default=None, metadata={"help": "Default: the model's context length (<= 1024)."})
    preprocessing_num_workers: int | None = None


def group_texts(examples: dict[str, list], block_size: int) -> dict[str, list]:
    """Concatenate all token lists and cut them into `block_size` blocks (dropping the remainder)."""
    concatenated = {k: list(chain(*examples[k])) for k in examples}
    total = (len(concatenated["input_ids"]) // block_size) * block_size
    blocks = {k: [t[i : i + block_size] for i in range(0, total, block_size)] for k, t in concatenated.items()}
    blocks["labels"] = [list(b) for b in blocks["input_ids"]]
    return blocks


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    parser.set_defaults(eval_strategy="epoch")
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    set_seed(training_args.seed)

    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer or model_args.teacher)
    student, teacher = load_student_and_teacher(model_args, AutoModelForCausalLM)

    context = adapter_class_for_config(student.config).max_positions(student.config) or 1024
    block_size = min(data_args.block_size or 1024, context, tokenizer.model_max_length)

    with training_args.main_process_first(desc="tokenizing and grouping"):
        train_raw, eval_raw = train_eval_splits(
            load_source(data_args.dataset, data_args.dataset_config), data_args, training_args.seed
        )
        blocks = []
        for raw in (train_raw, eval_raw):
            check_columns(raw, [data_args.text_column])
            tokenized = raw.map(
                lambda b: tokenizer(b[data_args.text_column]),
                batched=True,
                remove_columns=raw.column_names,
                num_proc=data_args.preprocessing_num_workers,
                desc="tokenizing",
            )
            blocks.append(
                tokenized.map(
                    group_texts,
                    batched=True,
                    fn_kwargs={"block_size": block_size},
                    num_proc=data_args.preprocessing_num_workers,
                    desc=f"grouping into blocks of {block_size}",
                )
            )
    train_ds, eval_ds = blocks
    if data_args.max_train_samples is not None:
        train_ds = train_ds.select(range(min(data_args.max_train_samples, len(train_ds))))
    if data_args.max_eval_samples is not None:
        eval_ds = eval_ds.select(range(min(data_args.max_eval_samples, len(eval_ds))))
    if len(train_ds) == 0:
        raise ValueError(f"no training block of {block_size} tokens: the training text is too short")

    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        alpha=model_args.alpha,
        temperature=model_args.temperature,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        data_collator=default_data_collator,  # fixed-length blocks: no padding needed
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()  # the student only, with the tokenizer
    metrics = trainer.evaluate()
    if "eval_ce" in metrics:  # absent when the eval split yields no block
        metrics["eval_perplexity"] = math.exp(min(metrics["eval_ce"], 700.0))
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    return metrics


if __name__ == "__main__":
    main()
