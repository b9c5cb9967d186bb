"""Where posts come from. Each source yields `tweetbot.posts.Post`s made by `posts.make_post`:

- `x_api`: an account's timeline through the X API v2 (tweepy), page by page, for incremental fetches;
- `archive`: the tweets.js of an X archive ("download your data"), its split parts, or the .zip itself;
- `files`: JSON lines, CSV, or a plain text cut into paragraphs;
- `demo`: the built-in demo set in data/demo/, read as a JSON-lines file.

`tweetbot.fetch` picks the source from params.yaml `fetch:`, filters, and writes the one output format.
"""
