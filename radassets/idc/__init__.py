"""IDC access: the index (bundled or a stand-in laid out the same way), cohorts, downloads."""
