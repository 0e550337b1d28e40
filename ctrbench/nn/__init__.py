"""What models are built from: the shared feature embedding, layers, and parameter and FLOP counts."""
