"""The transcription upload as sent upstream: the client's fields and file, read back by a multipart parser."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from gateway.api.audio_parsing import parse_transcription
from gateway.errors import BadRequestError
from gateway.providers.audio_relay import multipart
from gateway.providers.base import Upload


def test_an_upload_survives_the_relay_with_its_repeated_fields() -> None:
    clip = Upload(filename='my "talk"\r\nX-Evil: 1.wav', content_type="audio/wav", data=b"RIFF\x00\r\n--x")
    fields = {"model": "whisper-1", "timestamp_granularities[]": ["word", "segment"], "language": "en"}
    body, content_type = multipart(fields, clip)
    parsed = parse_transcription(body, Headers({"content-type": content_type}))
    assert parsed.body == fields
    assert parsed.upload is not None and parsed.upload.data == clip.data
    # A quote or line break in the file's name cannot end its header: escaped as browsers do.
    assert parsed.upload.filename == "my %22talk%22%0D%0AX-Evil: 1.wav"


def test_a_second_file_part_is_refused() -> None:
    body, content_type = multipart({"model": "m"}, Upload("a.wav", "audio/wav", b"1"))
    boundary = content_type.split("=")[1].encode()
    extra = (b'--%s\r\nContent-Disposition: form-data; name="file"; filename="b.wav"\r\n\r\n2\r\n' % boundary)
    doubled = body.replace(b"--%s--" % boundary, extra + b"--%s--" % boundary)
    with pytest.raises(BadRequestError, match="Only one 'file' part"):
        parse_transcription(doubled, Headers({"content-type": content_type}))


def test_a_field_that_is_not_text_is_a_400_naming_it() -> None:
    body = b'--b\r\nContent-Disposition: form-data; name="language"\r\n\r\n\xff\xfe\r\n--b--\r\n'
    with pytest.raises(BadRequestError) as caught:
        parse_transcription(body, Headers({"content-type": "multipart/form-data; boundary=b"}))
    assert caught.value.param == "language"
