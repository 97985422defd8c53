"""The image-text mode (`matrix-llm clip`): InfoNCE + matrix terms, zero-shot and retrieval."""
