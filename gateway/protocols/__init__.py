"""Client protocols other than Chat Completions, translated to and from it."""
