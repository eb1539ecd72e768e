"""`wtours download` and `wtours add`."""

from __future__ import annotations

import json

import click

from wtours.cli.common import is_quiet, root_option, say, verbosity_options
from wtours.config import click_options
from wtours.fetch.download import DownloadConfig, describe_plan, flag_options, resolve_targets
from wtours.fetch.download import download as download_video
from wtours.fetch.local import add_local
from wtours.fetch.ytdlp_options import load_settings
from wtours.layout import Layout


@click.command()
@click.option("--city", "cities", multiple=True, metavar="SLUG", help="Corpus video (slug or alias); repeatable.")
@click.option("--all", "all_videos", is_flag=True, help="All ten corpus videos.")
@click.option("--url", help="Any other source yt-dlp understands (a mirror, a direct file URL); needs --name.")
@click.option("--name", help="Name for --url: lowercase letters, digits and '-'.")
@root_option
@click_options(DownloadConfig, only=("max_height", "retries", "rate_limit", "cookies", "cookies_from_browser",
                                     "verify"))
@click.option("--yt-dlp-option", "ytdlp_options", multiple=True, metavar="KEY=VALUE",
              help="A YoutubeDL parameter (Python API name; VALUE as JSON, else text), e.g. proxy=socks5://host:1080 "
                   "or http_headers='{\"User-Agent\": \"...\"}'; repeatable; wins over your yt-dlp config.")
@click.option("--ignore-yt-dlp-config", is_flag=True,
              help="Do not read your yt-dlp config (~/.config/yt-dlp/config, ...); it is read by default.")
@click.option("--dry-run", is_flag=True, help="Print what would be fetched and where; no network.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print JSON.")
@verbosity_options
def download(cities, all_videos, url, name, root, max_height, retries, rate_limit, cookies, cookies_from_browser,
             ytdlp_options, ignore_yt_dlp_config, verify, dry_run, as_json) -> None:
    """Download corpus videos with yt-dlp: resumable, verified, with provenance in info.json.

    Your yt-dlp config (the files a bare `yt-dlp` reads: ~/.config/yt-dlp/config, $XDG_CONFIG_HOME,
    ~/yt-dlp.conf, /etc/yt-dlp.conf, their --config-locations) applies, except the options wtours must
    own (output location, resuming, one video, no post-processing, progress); the command says which
    were applied and which were not, and why. Later wins: your config, wtours flags, --yt-dlp-option.

    \b
    Examples:
      wtours download --city venice --dry-run
      wtours download --city venice --city zurich --cookies cookies.txt
      wtours download --all --root /data/wtours --rate-limit 20M
      wtours download --url https://example.org/walk.mp4 --name my-walk
      wtours download --city venice --yt-dlp-option proxy=socks5://127.0.0.1:1080
    """
    layout = Layout(root)
    targets = resolve_targets(cities, all_videos, url, name)
    given = {"--rate-limit": rate_limit, "--retries": retries, "--cookies": cookies,
             "--cookies-from-browser": cookies_from_browser}
    settings = load_settings(read_config=not ignore_yt_dlp_config, options=ytdlp_options,
                             flags_given=[flag for flag, value in given.items() if value is not None])
    config = DownloadConfig(root=layout.root, max_height=max_height, retries=retries, rate_limit=rate_limit,
                            cookies=cookies, cookies_from_browser=cookies_from_browser, verify=verify,
                            progress=not is_quiet(), ytdlp=settings)
    flag_options(config)  # a bad --rate-limit or a missing --cookies file fails before any transfer
    if not as_json:
        for line in settings.describe():
            say(line)
    if dry_run:
        plan = describe_plan(targets, layout, config)
        if as_json:
            click.echo(json.dumps(plan, indent=2))
        for row in [] if as_json else plan:
            state = "complete, would skip" if row["complete"] else "would fetch"
            click.echo(f"{row['slug']}: {row['id'] or '-'} {row['url']} -> {row['target']} ({state})")
        return
    for target in targets:
        result = download_video(target, config, say=say)
        if is_quiet():
            click.echo(f"{result.slug}: {result.status} {result.path}")


@click.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--name", required=True, help="Video name: a corpus slug (e.g. venice) or your own.")
@root_option
@click.option("--mode", type=click.Choice(["link", "copy", "symlink", "move"]), default="link", show_default=True,
              help="How the file enters the root: hard link (copy across filesystems), copy, symlink or move.")
@click.option("--allow-damaged", is_flag=True,
              help="Register a file that does not decode to its end (shard keeps what decodes).")
@click.option("--force", is_flag=True,
              help="Replace a video already registered under --name (refused without it).")
@click.option("--source-url", metavar="URL",
              help="Where the video is published (http/https); the dataset card links it (`wtours push` needs it).")
@click.option("--uploader", metavar="NAME", help="The video's creator, credited in the dataset card.")
@click.option("--license", "license_", metavar="LICENCE",
              help="The video's licence: an SPDX id (CC-BY-4.0) or as the source states it; `wtours push` needs it.")
@click.option("--title", metavar="TEXT", help="The video's title, shown in the dataset card.")
@click.option("--mirror", is_flag=True,
              help="The file comes from the figshare mirror: record the mirror (its page, the file's name) as the "
                   "source, beside the original YouTube page.")
@verbosity_options
def add(path, name, root, mode, allow_damaged, force, source_url, uploader, license_, title, mirror) -> None:
    """Register a local video file (e.g. from the figshare mirror) under the data root.

    PATH is an mp4 or mkv (any name), or a .zip holding one such video (extracted into the
    root; the archive is kept). info.json records the file's sha256, to compare with the source's.
    --source-url, --uploader and --license record its provenance (your own video, or one from
    elsewhere), so `wtours push` can attribute it in the dataset card. Adding the same file again
    updates them; fields not given keep what was recorded.

    \b
    Examples:
      wtours add ~/Downloads/Venice.mp4 --name venice --mirror
      wtours add ~/Downloads/Venice.zip --name venice --mirror
      wtours add walk.mp4 --name my-walk --mode copy
      wtours add walk-fixed.mp4 --name my-walk --force   # replace the registered video
      wtours add walk.mp4 --name my-walk --source-url https://example.org/walk --uploader 'Jane Walker' \\
          --license CC-BY-4.0
    """
    provenance = {"url": source_url, "uploader": uploader, "license": license_, "title": title}
    result = add_local(path, name, Layout(root).root, mode=mode, allow_damaged=allow_damaged, say=say, force=force,
                       provenance=provenance, mirror=mirror)
    if is_quiet():
        click.echo(f"{result.slug}: {result.status} {result.path}")
