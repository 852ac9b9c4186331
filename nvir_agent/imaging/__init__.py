"""Looking at one image: reading any vendor file, segmenting the spheroid, its features, QC flags, outline and thumbnail."""
