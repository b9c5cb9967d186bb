"""tweetbot: an account's posts in, a deployed text-generating bot out."""
