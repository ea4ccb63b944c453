"""Sessions and the dataset tools: view, clean, prepare, import."""
