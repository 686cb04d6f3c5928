"""Event schemas: facts, intents, node commands and vrouter configuration."""
