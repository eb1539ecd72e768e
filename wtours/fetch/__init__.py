"""Getting videos into the data root: `download` (yt-dlp, with its options in `ytdlp_options`) and `local`
(`wtours add` of a file on disk). Both record the video with `wtours.video.write_video_info`."""
