"""RecommenderPusher: publishes blessed models for TF Serving, with a ScaNN index."""
