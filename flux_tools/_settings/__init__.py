"""Layer 2, settings: the only reader of the environment, and the settings every client takes."""
