"""Dataset building: the builder (`build`), cube extraction and negative sampling (`cubes`),
and the built datasets on disk (`store`: file names, manifest, readers)."""
