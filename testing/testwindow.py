"""A small animated X window (pygame) to capture when there is no emulator.

Used by the tests and bench/record.py under Xvfb (through testing.display):
``python -m testing.testwindow --title KartPilot-Test --size 240x320`` (HxW).
It draws a moving road-like scene so consecutive frames differ.
"""

from __future__ import annotations

import argparse
import math
import os

from common.cli import size_arg


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m testing.testwindow", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--title", default="KartPilot-Test")
    ap.add_argument("--size", type=size_arg(), default=(240, 320), metavar="HxW",
                    help="window size, rows x columns (default: 240x320)")
    ap.add_argument("--fps", type=int, default=60)
    ap.add_argument("--seconds", type=float, default=600, help="exit after this long")
    args = ap.parse_args(argv)
    os.environ.setdefault("SDL_VIDEODRIVER", "x11")
    os.environ["PYGAME_HIDE_SUPPORT_PROMPT"] = "1"
    import pygame

    h, w = args.size
    pygame.display.init()
    screen = pygame.display.set_mode((w, h), pygame.NOFRAME)
    pygame.display.set_caption(args.title)
    clock = pygame.time.Clock()
    frames = int(args.seconds * args.fps)
    for i in range(frames):
        if any(ev.type == pygame.QUIT for ev in pygame.event.get()):
            break  # SDL turns SIGTERM into QUIT
        screen.fill((90, 150, 230))
        pygame.draw.rect(screen, (40, 160, 60), (0, h // 2, w, h // 2))
        sway = int(w * 0.15 * math.sin(i / 20))
        pygame.draw.polygon(screen, (90, 90, 90), [(w // 2 - 10 + sway, h // 2), (w // 2 + 10 + sway, h // 2),
                                                  (w - 10, h), (10, h)])
        y = h // 2 + (i * 4) % (h // 2)
        pygame.draw.rect(screen, (250, 250, 250), (w // 2 - 3 + sway // 2, y, 6, 12))
        pygame.display.flip()
        clock.tick(args.fps)
    pygame.quit()


if __name__ == "__main__":
    main()
