"""The processed-dataset contract, dataset configs and releases, the generated datasets, and files -> batches."""
