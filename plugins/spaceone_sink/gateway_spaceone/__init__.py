"""Gateway plugin."""
