"""The analysis pipeline: the stage contract and the stages the engine runs on every image (read, segment, thumbnail, score)."""
