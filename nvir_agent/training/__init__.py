"""Training and evaluating NViR on labelled images: labels, augmentations,
splits and crops, the training loop, evaluation and the classic-feature baseline."""
