"""Realtime speech-to-speech models (OpenAI Realtime over WebSocket) and the fallback to the pipeline."""
