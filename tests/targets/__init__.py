"""Small stand-in targets for the registry's mechanics; real vLLM targets are tested too."""
