"""Controllers: they read analysed frames and ask for actions."""
