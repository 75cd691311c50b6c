"""TwoStagePusher: retrieval then ranking, in one served SavedModel."""
