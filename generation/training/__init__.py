"""The trainer's pure code, no database: the chat export to tokens (`data`), LoRA steps and
checkpoints with transformers + peft (`lora`), the adapter as a llama.cpp GGUF (`gguf_lora`),
and perplexity through llama.cpp (`perplexity`). generation/services/training.py drives them."""
