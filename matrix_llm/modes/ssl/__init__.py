"""The self-supervised vision mode (`matrix-llm ssl`): the methods of methods.py, frozen-feature probes."""
