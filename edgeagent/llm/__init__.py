"""Local and cloud language models, chat context and tools."""
