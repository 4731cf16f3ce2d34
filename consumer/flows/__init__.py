"""Flow handlers: plain async functions of a typed change event, with effects through the context's ports."""
