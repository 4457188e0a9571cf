"""Re-ID datasets on disk, attribute annotations, the synthetic camera dataset, sampling."""
