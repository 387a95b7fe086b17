"""Cloud providers over OpenAI-compatible APIs: chat completions, transcription, speech."""
