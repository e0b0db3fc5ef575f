"""Named models that work offline: the catalogue (names to folders), the embedded SmolLM2 GGUF, the model
organisms and the SmolLM2 safety pair. Loading knows nothing of the zoo: `models.resolve` turns a zoo name into
a folder first."""
