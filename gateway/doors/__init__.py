"""The client-facing listener and one codec per inbound dialect (today: OpenAI chat completions)."""
