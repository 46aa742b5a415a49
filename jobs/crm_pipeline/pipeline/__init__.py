"""Job steps that read and write the lake around the pure transforms (the `how` of each job)."""
