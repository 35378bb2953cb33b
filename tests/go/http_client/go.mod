module provd.test/httpclient

go 1.19
