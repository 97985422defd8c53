"""The LM mode (`matrix-llm sft`): causal-LM fine-tuning with LM loss + matrix loss, GSM8K evaluation."""
