"""The VOC zero-shot split's seen classes, for tests that build a tiny segmenter trained "on VOC"."""

VOC_SEEN = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
            "diningtable", "dog", "horse", "motorbike", "person")
