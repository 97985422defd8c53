"""The classification mode (`matrix-llm classify`): CE + MIR / HDR / matrix-entropy terms."""
