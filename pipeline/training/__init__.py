"""Training: configuration (`config`, no torch), data and split (`data`), crops on the training
device (`crops`), the loss (`loss`), validation (`validation`) and the run loop (`trainer`)."""
